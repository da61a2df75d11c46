// Typeset the page's equations (pymdownx.arithmatex's generic output) with KaTeX, on every page Material loads.
document$.subscribe(function () {
  renderMathInElement(document.body, {
    delimiters: [
      { left: "\\[", right: "\\]", display: true },
      { left: "\\(", right: "\\)", display: false },
    ],
  });
});

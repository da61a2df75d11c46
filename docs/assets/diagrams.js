// Draw the pages' mermaid diagrams (```mermaid fences, div.diagram) with the site's own mermaid, on every page.
mermaid.initialize({ startOnLoad: false, theme: "neutral" });
document$.subscribe(function () {
  mermaid.run({ querySelector: "div.diagram" });
});

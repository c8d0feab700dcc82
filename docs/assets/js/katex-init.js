// Render the math that pymdownx.arithmatex (generic mode) leaves as \( ... \) and \[ ... \] inside
// .arithmatex elements. KaTeX is vendored under assets/katex; nothing is fetched from elsewhere.
// A formula KaTeX cannot parse becomes a visible .katex-error element (the docs test looks for it).
document$.subscribe(function () {
  document.querySelectorAll(".arithmatex").forEach(function (el) {
    renderMathInElement(el, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true }
      ],
      throwOnError: false,
      strict: "ignore",
      trust: false,
      macros: {
        "\\R": "\\mathbb{R}",
        "\\Diag": "\\operatorname{Diag}",
        "\\tril": "\\operatorname{tril}",
        "\\T": "^{\\top}"
      }
    });
  });
});

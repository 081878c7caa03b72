// The dashboard's only script of its own: ask before destructive or bulk actions. Forms opt in
// with data-confirm="question". (Inline handlers would need 'unsafe-inline' in the CSP.)
document.addEventListener("submit", function (event) {
  var question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// Progressive enhancement only: every page works without this script.
// Filters of the experiments list apply as soon as a select changes.
document.addEventListener("change", function (e) {
  var t = e.target;
  if (t && t.matches && t.matches("form.filters select")) {
    t.form.submit();
  }
});

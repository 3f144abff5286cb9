// Runs after the Vega bundle; wrapped in a function so its names cannot meet the bundle's.
(function () {
  var body = document.body;
  var errors = [];
  var specs = JSON.parse(document.getElementById("chart-specs").textContent);
  var nodes = Array.prototype.slice.call(document.querySelectorAll(".chart"));
  function finish(rendered) {
    body.dataset.chartErrors = errors.join("\n");
    body.dataset.chartsRendered = String(rendered);
  }
  if (typeof window.vegaEmbed !== "function") {
    errors.push("vegaEmbed is not available");
    finish(0);
    return;
  }
  Promise.all(nodes.map(function (node) {
    var name = node.getAttribute("data-chart");
    return window.vegaEmbed(node, specs[name], {actions: false, renderer: "svg"})
      .then(function () { return 1; })
      .catch(function (err) {
        errors.push(name + ": " + (err && err.message ? err.message : String(err)));
        return 0;
      });
  })).then(function (done) {
    finish(done.reduce(function (a, b) { return a + b; }, 0));
  });
})();

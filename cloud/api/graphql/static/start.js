// Dockyard's GraphiQL: the API token is asked for once and kept for this browser tab
// (sessionStorage), then sent as a bearer token with every request. Served by the cloud
// with React, ReactDOM and GraphiQL's own files beside it: nothing loads from elsewhere.
(function () {
  "use strict";
  var KEY = "dockyard.api-token";
  var root = document.getElementById("graphiql");
  var form = document.getElementById("token-form");

  function start(token) {
    form.hidden = true;
    root.hidden = false;
    var fetcher = GraphiQL.createFetcher({
      url: window.location.pathname,
      headers: { Authorization: "Bearer " + token },
    });
    ReactDOM.createRoot(root).render(
      React.createElement(GraphiQL, { fetcher: fetcher, shouldPersistHeaders: false })
    );
  }

  document.getElementById("forget").addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    window.location.reload();
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var token = document.getElementById("token").value.trim();
    if (token) {
      sessionStorage.setItem(KEY, token);
      start(token);
    }
  });
  var saved = sessionStorage.getItem(KEY);
  if (saved) {
    start(saved);
  } else {
    form.hidden = false;
  }
})();

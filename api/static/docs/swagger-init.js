// Starts Swagger UI on /docs. A file rather than the inline <script> FastAPI writes, so the page's CSP can
// forbid inline scripts outright.
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    showExtensions: true,
    // The key typed into "Authorize" stays in this page's memory: never in localStorage.
    persistAuthorization: false,
    // No spec sent to the public validator: nothing leaves this origin.
    validatorUrl: null,
  });
})();

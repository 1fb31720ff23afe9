"""The OpenAI-compatible server: `protocol` (the wire schema, nothing else), `convert` (a request
into an engine request), `batching` (requests generated together), `errors` (HTTP statuses),
`settings` (limits and switches), `app` (routes, middleware, `serve`), `static/` (the web page).
Imports the engine; nothing imports it but the CLI."""

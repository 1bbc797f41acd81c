"""The monitoring service's web dashboard: read-only pages (overview, experiments, drift, models, alerts) and
the JSON each one draws, served over HTTP beside the gRPC API (FastAPI on uvicorn, Jinja2 pages, Plotly charts).

- `scrape`: pulls every process's Prometheus /metrics into a short in-memory history (the overview's source);
- `series`: rates and histogram quantiles over that history (what PromQL's rate() and histogram_quantile() do);
- `views`: the data of each page, from the scrapes, the monitoring store and the model registry;
- `app`: the routes, authentication (the gRPC API's API keys / JWTs, as a header or a login cookie);
- `server`: uvicorn in a thread of the monitoring process.
"""

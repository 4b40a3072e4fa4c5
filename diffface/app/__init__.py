"""The application layer: pipelines built from fitting and networks (the demo's settings and figures)."""

"""diffface.renderers: differentiable rendering layers (installed as ``diffface.renderers``)."""

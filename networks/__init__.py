"""diffface.networks: parameter-regression networks (installed as ``diffface.networks``).

Depends on the diffface core only, so exporting a network never pulls in a renderer.
"""

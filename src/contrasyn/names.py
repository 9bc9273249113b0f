"""The one list of method names, and the module that registers each (torch-free: the
settings and the ONNX runtime read it without importing the methods)."""

from __future__ import annotations

# The one list of methods: name -> the module that registers it (imported on first use, so
# naming a method costs nothing). A module's class answers to every name that maps to it.
_MODULES = {
    "knn": "contrasyn.methods.baselines.knn",
    "ocsvm": "contrasyn.methods.baselines.ocsvm",
    "deepsvdd": "contrasyn.methods.baselines.deepsvdd",
    "rot": "contrasyn.methods.baselines.rot",
    "goad": "contrasyn.methods.baselines.goad",
    "dn2": "contrasyn.methods.pretrained",
    "csi": "contrasyn.methods.csi",
    "csi+g": "contrasyn.methods.csi",
    "full": "contrasyn.methods.csi",
}
METHOD_NAMES = tuple(_MODULES)
BASELINES = tuple(
    n for n, module in _MODULES.items() if module.startswith("contrasyn.methods.baselines.")
)
# The methods whose settings are one section named after the method (all but the CSI family,
# which reads train and score).
OWN_SECTION = tuple(n for n, module in _MODULES.items() if module != "contrasyn.methods.csi")


def names_in(module: str) -> tuple[str, ...]:
    """The method names ``module`` registers (``_MODULES``)."""
    return tuple(n for n, m in _MODULES.items() if m == module)

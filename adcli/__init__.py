"""adcli: differentiate expression files and tell the truth about what that costs."""
__version__ = "0.1.0"


def load(path, set=None, **kwargs):
    """Load a .ad file; see adcli.api.load."""
    from .api import load as _load
    return _load(path, set=set, **kwargs)


def loads(text, filename="<input>", set=None, **kwargs):
    """Build a program from source text; see adcli.api.loads."""
    from .api import loads as _loads
    return _loads(text, filename, set=set, **kwargs)

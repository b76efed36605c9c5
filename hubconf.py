"""torch.hub entry points: ``torch.hub.load('<repo>', 'fd_mobilenet_050', source='local', ...)``.

``pretrained=True`` fetches the authors' released file (pinned commit, checksum-checked) into
torch.hub's cache and converts it once; ``pretrained='path/to/weights.safetensors'`` needs no network.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from fdmobilenet.models import create_model, list_models  # noqa: E402

dependencies = ["torch", "torchvision", "safetensors"]


def _entry(name):
    def fn(**kwargs):
        return create_model(name, **kwargs)

    fn.__name__ = name
    fn.__doc__ = f"fdmobilenet's {name}; keyword arguments go to fdmobilenet.create_model."
    return fn


for _name in list_models():
    globals()[_name] = _entry(_name)

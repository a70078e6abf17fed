"""From a trained run to a Hugging Face model repository, and back from foreign checkpoints.

    from equimod_zoo.hub import convert_checkpoint, publish
    result = publish("runs/x", repo_id="ORG/NAME", out="export/x", dry_run=True)   # `equimod-zoo publish`

Names import on first use: `python -m equimod_zoo.hub.model_cards` runs its module without this
package importing it first.
"""
from __future__ import annotations

from equimod_zoo.lazy import lazy_attributes

_LAZY = {
    "publish": "equimod_zoo.hub.publish",
    "PublishResult": "equimod_zoo.hub.publish",
    "export_model": "equimod_zoo.hub.export",
    "ExportResult": "equimod_zoo.hub.export",
    "convert_checkpoint": "equimod_zoo.hub.convert",
    "ConversionReport": "equimod_zoo.hub.convert",
    "add_to_zoo": "equimod_zoo.hub.zoo_bundle",
    "write_model_cards": "equimod_zoo.hub.model_cards",
    "check_model_cards": "equimod_zoo.hub.model_cards",
}
__all__ = [*_LAZY]
__getattr__ = lazy_attributes(__name__, _LAZY)

"""Whether a DAVIS feature/target store pair was made the way DINO evaluates DAVIS 2017.

DINO's eval_video_segmentation.py (facebookresearch/dino) fixes three things before propagation starts:
- the frame size: `read_frame` (l. 197-214) keeps the aspect ratio, short side 480, the long side floored
  to a multiple of 64 (480x854 -> 480x832);
- the scoring size: the predicted maps are resized to the annotation's own size (l. 80), where
  davis2017-evaluation scores them, i.e. native labels;
- the features: the last block through the final LayerNorm (`extract_feature` l. 153-155 calls
  `get_intermediate_layers(n=1)`, vision_transformer.py l. 225-233: `self.norm(x)` of the last block).
A number from stores made otherwise is not comparable to DINO's, so `maxa local propagate` refuses such a
DAVIS store unless asked (`--davis-protocol any`), and the record says which protocol produced it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maxa.core import store as st
from maxa.core.dataset_facts import dino_input_size
from maxa.core.provenance import NATIVE, FeatureProvenance, TargetProvenance

DAVIS = "davis"


def frame_size(tstore: st.Store) -> tuple[int, int] | None:
    """The frames' own (height, width): the target store's `original_size`, else its native label size."""
    if "original_size" in tstore.array_names():
        sizes = np.unique(tstore.read("original_size").reshape(-1, 2), axis=0)
        if len(sizes) == 1:
            return int(sizes[0][0]), int(sizes[0][1])
        return None  # several sizes: DINO's rule gives each its own input size, one store has one
    tprov = TargetProvenance.of(tstore)
    return tprov.label_size if tprov.label_resolution == NATIVE else None


def differences(fstore: st.Store, tstore: st.Store) -> list[str]:
    """How the stores differ from DINO's DAVIS protocol, one phrase per setting ([]: they follow it)."""
    fprov, tprov = FeatureProvenance.of(fstore), TargetProvenance.of(tstore)
    found = []
    frames = frame_size(tstore)
    have = list(fprov.need("input_size", f"feature store {fstore.url}"))
    if frames is None:
        found.append(f"input size {_size(have)} (the frames' size is unknown, so DINO's is too)")
    else:
        want = list(dino_input_size(*frames))
        if have != want:
            found.append(f"input size {_size(have)} (DINO: {_size(want)} for {_size(list(frames))} frames)")
    if tprov.label_resolution != NATIVE:
        found.append(f"labels at {_size(tprov.label_size)} (DINO: the annotations' own size)")
    if not fprov.norm:
        found.append("features without the final norm (DINO: --norm)")
    return found


def commands(fstore: st.Store, tstore: st.Store) -> str:
    """The `maxa prepare` / `maxa extract` commands that make this pair DINO's way."""
    fprov, tprov = FeatureProvenance.of(fstore), TargetProvenance.of(tstore)
    frames = frame_size(tstore)
    size = _size(list(dino_input_size(*frames))) if frames else "480x832"
    model = fprov.other.get("preset") or fprov.model
    root = tprov.dataset.root or "DAVIS_ROOT"
    return (
        f"`maxa prepare --dataset davis --split {tprov.dataset.split} --root {root} --label-size native "
        f"--out TARGETS` and `maxa extract --targets TARGETS --model {model} --input-size {size} --norm "
        "--out FEATURES`"
    )


def record(fstore: st.Store, tstore: st.Store) -> dict[str, Any]:
    """The protocol entries of the metrics record: which protocol the stores follow and how they differ."""
    if TargetProvenance.of(tstore).dataset.name != DAVIS:
        return {"davis_protocol": "not DAVIS", "davis_protocol_differences": []}
    found = differences(fstore, tstore)
    return {"davis_protocol": "differs" if found else "dino", "davis_protocol_differences": found}


def _size(size: list[int] | tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in size)

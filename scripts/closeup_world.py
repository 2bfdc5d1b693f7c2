"""Run an `hspace` command in the close-up toy world (an experiment, not the shipped world).

The close-up zooms every toy face 1.6x about its centre (``hspace.toyworld.faces.FRAME_ZOOM``),
so the eyes, glasses and mouth span whole cells of the U-Net's 8x8 h. Every built-in model was
trained on the shipped framing, so in this world each must be retrained and passed by folder;
the probe is taken from ``$HSPACE_CLOSEUP_PROBE`` (a `train-probe --out` folder) when set.
The ninth session's run (docs/toyworld.md, "Close-up framing"):

    python scripts/closeup_world.py toyworld train-probe --workers 0 --threads 2 --out P
    HSPACE_CLOSEUP_PROBE=P python scripts/closeup_world.py toyworld train-unet --threads 2 --checkpoint-dir CK --out U
    HSPACE_CLOSEUP_PROBE=P python scripts/closeup_world.py toyworld check --only h-oracle --by-level --quick --threads 2 --model U --out Q
    HSPACE_CLOSEUP_PROBE=P python scripts/closeup_world.py toyworld train-clip --workers 0 --threads 2 --out C
    HSPACE_CLOSEUP_PROBE=P python scripts/closeup_world.py toyworld train-directions --model U --clip C --out D --threads 2
"""

import os
import sys

import hspace.toyworld.faces as faces
import hspace.toyworld.probe as probe
from hspace.cli.main import main

faces.FRAME_ZOOM, faces.FRAME_CENTER_Y = 1.6, 0.6
if os.environ.get("HSPACE_CLOSEUP_PROBE"):
    # every check and evaluation loads the probe through load_probe()'s default folder
    probe.load_probe.__defaults__ = (os.environ["HSPACE_CLOSEUP_PROBE"], "cpu")

if __name__ == "__main__":
    sys.argv = ["hspace", *sys.argv[1:]]
    main()

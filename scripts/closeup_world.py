"""Run an `hspace` command in the close-up toy world (an experiment, not the shipped world).

The close-up zooms every toy face 1.6x about its centre (``hspace.toyworld.faces.FRAME_ZOOM``),
so the eyes, glasses and mouth span whole cells of the U-Net's 8x8 h. Every built-in model was
trained on the shipped framing, so in this world each must be retrained and passed by folder
(`--model`, `--clip`, `--probe`). The ninth session's run (docs/toyworld.md, "Close-up framing"):

    python scripts/closeup_world.py toyworld train-probe --workers 0 --threads 2 --out P
    python scripts/closeup_world.py toyworld train-unet --threads 2 --checkpoint-dir CK --out U
    python scripts/closeup_world.py toyworld check --only h-oracle --by-level --quick --threads 2 --model U --probe P --out Q
    python scripts/closeup_world.py toyworld train-clip --workers 0 --threads 2 --out C
    python scripts/closeup_world.py toyworld train-directions --model U --clip C --probe P --out D --threads 2
"""

import sys

import hspace.toyworld.faces as faces
from hspace.cli.main import main

faces.FRAME_ZOOM, faces.FRAME_CENTER_Y = 1.6, 0.6

if __name__ == "__main__":
    sys.argv = ["hspace", *sys.argv[1:]]
    main()

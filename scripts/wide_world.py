"""Run an `hspace` command in the wide toy world: the framing shipped until 2026-11-26.

The built-in world now frames every face 1.6x closer (``hspace.toyworld.faces.FRAME_ZOOM``), so
that the eyes, glasses and mouth span whole cells of the U-Net's 8x8 h (docs/toyworld.md,
"Close-up framing"). This runner sets the framing back to the wide one (zoom 1.0, face centre at
0.56 of the height) to reproduce the results measured there. Every built-in model is trained on
the close-up framing, so in this world each must be retrained and passed by folder (`--model`,
`--clip`, `--probe`), for example:

    python scripts/wide_world.py toyworld train-probe --workers 0 --threads 2 --out P
    python scripts/wide_world.py toyworld train-unet --threads 2 --checkpoint-dir CK --out U
    python scripts/wide_world.py toyworld check --only base --quick --threads 2 --model U --probe P --out Q

Until 2026-11-26 this script was ``scripts/closeup_world.py`` and set the close-up framing
(1.6 / 0.6) on top of the wide default; the ninth session's close-up runs used it.
"""

import sys

import hspace.toyworld.faces as faces
from hspace.cli.main import main

faces.FRAME_ZOOM, faces.FRAME_CENTER_Y = 1.0, faces._CY  # the layout's own face centre, 0.56

if __name__ == "__main__":
    sys.argv = ["hspace", *sys.argv[1:]]
    main()

"""Stylize images with a trained model: python stylize.py --help

Kept free of Lightning and Hydra so that it starts fast and needs only torch + pillow.
"""

import sys

from transformer_net.stylize_cli import main

if __name__ == "__main__":
    sys.exit(main())

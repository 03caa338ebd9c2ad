"""What the training and evaluation command lines share: help layout and data-source options."""

import argparse

from training.emnist import SPLITS
from training.protocol import PROTOCOLS


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help shows every default that is set and keeps the module docstring's layout."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default is not None and action.default is not False
        shown = shown and action.default != argparse.SUPPRESS
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def add_data_arguments(parser: argparse.ArgumentParser, *, default_source: str) -> None:
    """The `--protocol | --split` and `--data-root` options the CLIs share."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default=None,
        help=f"a protocol of ../shared/emnist/README.md (default: {default_source})",
    )
    source.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="an official EMNIST split, read from --data-root",
    )
    parser.add_argument(
        "--data-root",
        default=None,
        help="the shared folder for a protocol ($EMNIST_SHARED_ROOT or ../shared/emnist), "
        "the NIST distribution for a split (data/)",
    )

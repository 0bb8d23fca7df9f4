"""One module per ``monai-stroke`` command; each stays thin and calls the library (see ``monai_stroke/cli.py``)."""

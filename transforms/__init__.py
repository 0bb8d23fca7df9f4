"""Transform-chain config fragments shared by every bundle.

This folder is installed as the package ``monai_stroke.chains`` (see ``setup.cfg``) so that a bundle
folder copied elsewhere still finds the same chains; load them with
:func:`monai_stroke.transforms.chains.load_chain`.
"""

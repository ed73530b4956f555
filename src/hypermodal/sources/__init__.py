"""Where images come from: folders, real sample images shipped in PyPI packages, archives."""

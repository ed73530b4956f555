"""hypermodal: classify medical images by imaging modality at archive scale."""

__version__ = "0.1.0"

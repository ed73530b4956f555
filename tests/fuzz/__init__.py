"""The fuzz suite: seeded mutants of real test files, run through catalog, store and predict.

``bases`` gathers the real files (pydicom's DICOM in every codec, nibabel's NIfTI-1/2, PNG,
JPEG and TIFF made from real pixels); ``mutants`` (with ``dicom_ops``) mutates them
deterministically for a seed; ``specials`` lays out the files that are not plain images (FIFOs,
sockets, link loops, names that are not UTF-8, sparse giants) and each file the issue names;
``watch`` runs a command in its own session under a watchdog (time limit, peak memory of every
process, survivors); ``accounting`` checks that every input is a result or a reasoned error;
``stages`` runs the real CLI of each stage with both; ``triage`` bisects a failing corpus down to
the files that make it fail. ``test_fuzz`` is the CI slice, ``test_kill`` kills real runs;
``benchmarks/fuzz.py`` runs the same at scale.
"""

"""pathology.features stage: encoders, feature extraction, linear probe / kNN (`extract`, `probe`).

Python API: ``load_encoder`` / ``Encoder`` / ``save_encoder`` in ``.encoders``;
``extract_slide_features`` / ``extract_image_folder`` / ``extract_tiles_dir`` in ``.extract``;
``run_probe`` / ``probe_features`` in ``.probe``.
"""

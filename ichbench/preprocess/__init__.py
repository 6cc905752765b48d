"""Pure preprocessing functions shared by ingest and prediction."""

# Submodules are imported where used: `resize` pulls in torch, which DICOM decoding workers
# should not pay for at start-up.

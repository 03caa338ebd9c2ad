"""Helpers shared by the tests (fixtures live in tests/conftest.py).

- `support.servers`: small checkpoints and archives, test model stores, pictures, a TorchServe
  and a web app started and stopped through `serving.processes`;
- `support.live`: the live TorchServe + web app pair of the bad-input and fault tests;
- `support.kserve`: KServe layouts and TorchServes behind KServe's envelopes;
- `support.bad_images`, `support.bad_inputs`: seeded hostile pictures and requests;
- `support.bars`: a tiny learnable split in NIST's format, for training tests without EMNIST.
"""

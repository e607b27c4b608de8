//! Property tests live in `tests/`; shared helpers may come here.

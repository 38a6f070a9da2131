"""Pure DataFrame transforms that turn raw inputs into feature tables (no TensorFlow here)."""

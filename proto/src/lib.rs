//! kapseld's API types.

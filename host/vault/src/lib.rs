//! Token vault (work in progress).

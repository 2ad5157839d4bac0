//! The Rewind stack walker (being written).
#![no_std]

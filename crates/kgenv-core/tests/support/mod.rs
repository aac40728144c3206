//! Test peers shared by the integration tests (`mod support;`). Each is started by the test
//! itself on 127.0.0.1 and cleaned up on drop; a missing peer fails the test with a hint.
#![allow(dead_code)]

pub mod sshd;

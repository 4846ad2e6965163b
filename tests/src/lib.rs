//! Test harness for the integration tests: network namespaces, veth links and processes that
//! clean themselves up (guard objects), with per-run names so parallel runs never collide.

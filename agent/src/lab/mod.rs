//! The lab: a spec file of namespaces, pods, services and policy, made real as network
//! namespaces and veths on this machine, plus bounded traffic between them.

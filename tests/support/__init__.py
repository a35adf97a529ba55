"""Test infrastructure shared by tests/ and benchmarks/: a real mosquitto, a tiny checkpoint, a whole cluster
on one machine, the toy conversation backend. Never imported by the shipped packages."""

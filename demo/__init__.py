"""The demo: synthetic pictures and sounds whose truth is in their names (`demo.samples`), and the
training of the tiny models shipped in `ghostnet/data` (`demo.train`). Depends on `ghostnet` only."""

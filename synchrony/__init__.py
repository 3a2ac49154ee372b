"""Inter-brain synchrony quick-check of hyperscanning XDF recordings.

The entry point is :func:`dyadlab.synchrony.check.run_check` (``dyadlab check`` on the command line);
its JSON report is documented in ``docs/quickcheck-schema.md``. Sub-modules: ``io`` (XDF
loading), ``quality``, ``segments`` (conditions, alignment, filtering, epochs, rejection),
``metrics``, ``surrogates``, ``stats``, ``report`` (HTML).

Nothing heavy is imported here, so ``import synchrony`` stays cheap.
"""

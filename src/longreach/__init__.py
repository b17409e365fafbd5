"""longreach: measure how far a language model can read, and make it read further.

The public entry points are small and explicit:

- :func:`longreach.models.load_model` loads a model, its tokenizer and its native window;
- :func:`longreach.methods.parse_stack` turns a spec string such as ``"none"`` into a validated method stack;
- :func:`longreach.tasks.get_task` returns a registered task (generator + scorer);
- :func:`longreach.runner.run_sweep` runs a sweep into a resumable results store;
- :func:`longreach.report.render_report` renders report.json / .md / .html and the plots from that store.
"""

__version__ = "0.1.0"

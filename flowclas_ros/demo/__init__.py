"""``make demo``: the whole mission end to end (data, training, evaluation, live replay, ONNX, report).

Entry point: ``scripts/demo.py`` (``python scripts/demo.py --help``). The stages run
the project's CLIs as subprocesses; this package itself imports no ROS (the live
replay's recorder is ``scripts/demo_record.py``, started as a process).
"""

"""PsychoPy side of a dyadlab session: the task kit, the autopilot and the paradigms.

Importing this package loads no PsychoPy and opens no window; see ``docs/tasks.md``.
"""

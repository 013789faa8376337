"""The Discord front end of the outpaint bot: commands, buttons and replies, driving the job queue.

Nothing here imports torch, diffusers or OpenCV; the GPU work happens behind
:class:`outpaint_engine.queue.base.JobQueue`.
"""

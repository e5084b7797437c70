"""IR -> IR passes, run in order by `pipeline.run_passes`."""

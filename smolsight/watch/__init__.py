"""Watching cameras and clips: sources, rules, the frame gate, events and their outputs.

`rules` reads and checks the rules file, `sources` turns cameras, streams, files and folders
into frames, `gate` decides which frames changed, `answers` reads a model's answer as the
rule's type, `events` opens, updates and closes alerts, `outputs` delivers them, `watcher`
runs it all, `view` and `dashboard` show it in a terminal and a browser.
"""

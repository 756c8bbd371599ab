from .front import main

raise SystemExit(main(prog_name="cronwarden"))

import gc

gc.disable()  # while typer is imported: see mailsupport.cli.app.pause_collector
from mailsupport.cli import main  # noqa: E402

gc.enable()  # main pauses it again, until the settings are loaded
main()

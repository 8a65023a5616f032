from phdcli.cli import main

main()

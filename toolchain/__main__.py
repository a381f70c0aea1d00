from edgeify.cli.main import main

main()

from devec.cli import main

main()

from modelhost.cli import main

main()

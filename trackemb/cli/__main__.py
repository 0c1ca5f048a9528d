from trackemb.cli import main

main()

from zcluster.cli import main

main()

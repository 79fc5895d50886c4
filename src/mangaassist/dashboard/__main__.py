from mangaassist.dashboard.server import main

main()

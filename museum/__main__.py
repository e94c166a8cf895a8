from museum.launch import main

main()
